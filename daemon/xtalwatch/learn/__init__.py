"""The learning side: SimCLR training, classifier heads, the model bundle, the gate, the registry and retraining."""
