"""unison_sdk: Python client for unison-stream talking-avatar servers (no torch needed).

::

    from unison_sdk import connect

    async with connect("http://127.0.0.1:8080", api_key=KEY) as avatar:
        utt = await avatar.say("Hello there!")
        await utt                               # until finished or interrupted
        async with avatar.record("hello.mp4"):
            await (await avatar.say("Recorded."))

See docs/sdk.md. Blocking use: :func:`connect_sync`.
"""

from unison_sdk.avatars import (
    create_avatar,
    create_avatar_sync,
    delete_avatar,
    delete_avatar_sync,
    design_preview,
    get_avatar,
    list_avatars,
    list_avatars_sync,
)
from unison_sdk.client import Avatar
from unison_sdk.connect import Connect, connect
from unison_sdk.devices import Player, Recorder
from unison_sdk.errors import (
    AvatarRefused,
    BadRequest,
    CapacityError,
    ConnectionFailed,
    ConnectionLost,
    InternalError,
    PlaybackUnavailable,
    RateLimited,
    ServerBusyError,
    ServerError,
    SessionEnded,
    Unauthorized,
    UnisonError,
)
from unison_sdk.media import AudioFrame, Subscription, VideoFrame
from unison_sdk.protocol import (
    AvatarInfo,
    ConnectionEvent,
    ErrorEvent,
    Event,
    MediaInfo,
    StateEvent,
    StatsEvent,
    UtteranceEvent,
)
from unison_sdk.speech_stream import SpeechStream
from unison_sdk.sync import SyncAvatar, connect_sync
from unison_sdk.utterance import Utterance

__version__ = "0.1.0"

__all__ = [
    "AudioFrame",
    "Avatar",
    "AvatarInfo",
    "AvatarRefused",
    "BadRequest",
    "CapacityError",
    "Connect",
    "ConnectionEvent",
    "ConnectionFailed",
    "ConnectionLost",
    "ErrorEvent",
    "Event",
    "InternalError",
    "MediaInfo",
    "PlaybackUnavailable",
    "Player",
    "RateLimited",
    "Recorder",
    "ServerBusyError",
    "ServerError",
    "SessionEnded",
    "SpeechStream",
    "StateEvent",
    "StatsEvent",
    "Subscription",
    "SyncAvatar",
    "Unauthorized",
    "UnisonError",
    "Utterance",
    "UtteranceEvent",
    "VideoFrame",
    "__version__",
    "connect",
    "connect_sync",
    "create_avatar",
    "create_avatar_sync",
    "delete_avatar",
    "delete_avatar_sync",
    "design_preview",
    "get_avatar",
    "list_avatars",
    "list_avatars_sync",
]
