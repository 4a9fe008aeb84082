"""Self-supervised pretraining: backbones, methods (backbone + head + loss), optimisers, monitors."""
