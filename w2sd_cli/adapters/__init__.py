"""Adapters: the only code that touches diffusers. They turn networks into the sampler's denoisers."""
