"""The network: packed layers, building the model, heads, the closed network spec."""
