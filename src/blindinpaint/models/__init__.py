"""Pure ``nn.Module`` definitions; builders live in :mod:`blindinpaint.models.registry`."""
