"""Read images with a frozen attribute classifier: the class it gives each image (no gradients).

Learning reads the training images (the keep term, the classes held when attributes are learned together), the
checks read samples and edits, and holding reads the input image's classes (docs/editing.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from caso_cli.models.classifier import AttributeClassifier


def classify_images(classifier: AttributeClassifier, images: torch.Tensor, device: torch.device | str,
                    batch: int = 64) -> torch.Tensor:
    """The classifier's class for each image (N, 3, H, W) in [-1, 1], on the CPU."""
    with torch.no_grad():
        return torch.cat([classifier(images[i:i + batch].to(device)).argmax(1).cpu()
                          for i in range(0, images.shape[0], batch)])
