"""Building blocks: encoders, fusion modules, heads, losses. Plain nn.Modules, no I/O."""
