"""DiT-MoE: the model definition, checkpoint I/O and the ImageNet class names of the ``moe-experts`` pair."""
