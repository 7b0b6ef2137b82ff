"""unison-stream: a streaming, real-time talking-avatar server.

A causal Unison-style joint audio-video diffusion transformer (``unison_stream.model``) runs
chunk by chunk with a rolling KV cache; later layers stream its output over WebRTC.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
