"""itlin: iterative linearisation of neural networks, from training to the paper's figures."""

__version__ = "0.1.0"
