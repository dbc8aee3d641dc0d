"""Tools around the service: the demo, the synthetic imager, plate maps, embeddings maps, the config reference."""
