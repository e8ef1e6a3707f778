"""Data: the embedded synthetic multimodal ISAC generator, partitioners and real-format loaders."""

from fedmoe.data.samples import ISACSamples

__all__ = ["ISACSamples"]
