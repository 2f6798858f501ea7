"""Shipped int8 TFLite models (installed as ``fastes.models``); see MODEL_CARD.md."""
