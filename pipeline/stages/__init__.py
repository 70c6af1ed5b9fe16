"""The stages: one module per `python -m pipeline <stage>` (cli.STAGES), each doing its own I/O."""
