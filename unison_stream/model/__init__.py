"""The Unison model core: dual-stream causal DiT, rolling KV cache, sampler and generator."""
