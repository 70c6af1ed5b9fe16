"""The stages: one module per `python -m pipeline <stage>` (pipeline.commands), each doing its own I/O."""
