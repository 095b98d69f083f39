"""Networks only: DiT, speech-video window attention, audio projector, flow matching, SyncNet, VAE/text-encoder wrappers."""
