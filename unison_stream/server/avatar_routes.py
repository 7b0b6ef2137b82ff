"""The avatar routes (aiohttp): thin glue between HTTP and :class:`~.avatars.AvatarService`
(docs/protocol.md, "Avatars"; the paths are named in ``unison_sdk.protocol.avatars``).

A picture arrives as a raw image body (``Content-Type: image/png|jpeg|webp``, an optional
``?caption=``), as the multipart field ``picture`` (and ``caption``), or in JSON as base64;
a design as JSON. Every body is read with a cap (:func:`read_body`): past it the answer is
``413`` and nothing more is read. Every route needs the API key; a key sees only its own
avatars.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import BodyPartReader, web

from unison_stream.server import protocol as P
from unison_stream.server.avatars import AvatarService
from unison_stream.server.errors import BadRequest, TooLarge

__all__ = ["add_avatar_routes", "read_body"]

CHUNK = 65536


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, or :class:`TooLarge` as soon as it passes ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"request body of {request.content_length} bytes; the limit is {limit}")
    buf = bytearray()
    async for chunk in request.content.iter_chunked(CHUNK):
        buf += chunk
        if len(buf) > limit:
            raise TooLarge(f"request body over the limit of {limit} bytes")
    return bytes(buf)


async def _multipart(request: web.Request, limits: P.Limits) -> P.CreateAvatar:
    reader = await request.multipart()
    picture, caption = b"", ""
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise BadRequest("nested multipart bodies are not accepted")
        cap = limits.max_picture_bytes if part.name == P.PICTURE_FIELD else limits.max_message_bytes
        data = bytearray()
        while chunk := await part.read_chunk(CHUNK):
            data += chunk
            if len(data) > cap:
                raise TooLarge(f"multipart field {part.name!r} is over {cap} bytes")
        if part.name == P.PICTURE_FIELD:
            picture = bytes(data)
        elif part.name == "caption":
            caption = data.decode("utf-8", "replace")[: limits.max_caption_chars]
        else:
            raise BadRequest(f"unknown multipart field {part.name!r}; send 'picture' and 'caption'")
    if not picture:
        raise BadRequest(f"the multipart body has no '{P.PICTURE_FIELD}' file")
    return P.CreateAvatar(picture=picture, caption=caption)


async def read_create_avatar(request: web.Request, limits: P.Limits) -> P.CreateAvatar:
    """A ``POST /v1/avatars`` request, whichever of the three forms it takes."""
    kind = request.content_type
    if kind.startswith("multipart/"):
        return await _multipart(request, limits)
    body = await read_body(request, P.picture_body_limit(limits))
    if kind == "application/json" or body[:1] in (b"{", b"["):
        return P.parse_create_avatar(body, limits)
    if len(body) > limits.max_picture_bytes:
        raise TooLarge(
            f"the image is {len(body) / 2**20:.1f} MiB; the limit is "
            f"{limits.max_picture_bytes / 2**20:.0f} MiB"
        )
    if not body:
        raise BadRequest("empty body: send an image (PNG, JPEG, WebP) or a JSON design")
    caption = request.query.get("caption", "")
    if len(caption) > limits.max_caption_chars:
        raise BadRequest(f"'caption' must be ≤ {limits.max_caption_chars} characters")
    return P.CreateAvatar(picture=body, caption=caption)


def add_avatar_routes(
    app: web.Application,
    service: AvatarService,
    limits: P.Limits,
    check: Callable[[web.Request], str],
) -> None:
    """Register the avatar routes; ``check(request)`` returns the request's API key (or
    raises Unauthorized)."""

    async def create(request: web.Request) -> web.Response:
        key = check(request)
        info = await service.create(key, await read_create_avatar(request, limits))
        return web.json_response(info.wire(), status=201)

    async def preview_design(request: web.Request) -> web.Response:
        check(request)
        avatar = await service.make(await read_create_avatar(request, limits))
        return web.Response(body=avatar.preview_png(), content_type="image/png")

    async def traits(request: web.Request) -> web.Response:
        check(request)
        return web.json_response(service.traits())

    async def listing(request: web.Request) -> web.Response:
        listed = await service.list(check(request))
        return web.json_response(listed.wire())

    async def get(request: web.Request) -> web.Response:
        info = await service.get(check(request), request.match_info["aid"])
        return web.json_response(info.wire())

    async def preview(request: web.Request) -> web.Response:
        png = await service.preview(check(request), request.match_info["aid"])
        return web.Response(body=png, content_type="image/png")

    async def delete(request: web.Request) -> web.Response:
        aid = request.match_info["aid"]
        await service.delete(check(request), aid)
        return web.json_response({"id": aid, "deleted": True})

    app.router.add_post(P.AVATARS_PATH, create)
    app.router.add_get(P.AVATARS_PATH, listing)
    app.router.add_post(P.AVATAR_PREVIEW_PATH, preview_design)
    app.router.add_get(P.AVATAR_TRAITS_PATH, traits)  # before {aid}: a literal path wins
    app.router.add_get(P.avatar_path("{aid}"), get)
    app.router.add_get(P.avatar_preview_path("{aid}"), preview)
    app.router.add_delete(P.avatar_path("{aid}"), delete)
