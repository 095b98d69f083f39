"""Networks only: MoCha on the Wan 2.1 transformer (speech cross-attention, window mask, training
modes), audio projector, flow matching, SyncNet, VAE / text-encoder wrappers."""
