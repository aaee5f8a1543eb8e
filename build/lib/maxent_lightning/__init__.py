"""Composable sparse subnetworks trained with the Maximum-Entropy principle."""

__version__ = "0.1.0"
