"""The training engine: epoch plan, member-wise optimizer, loop, callbacks, reporting."""
