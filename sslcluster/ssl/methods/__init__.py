"""Self-supervised methods: thin LightningModules composing backbone + head + loss."""
