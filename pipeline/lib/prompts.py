"""Class prompts: the one place a class name becomes text for the frozen text tower."""
from __future__ import annotations

import re
from typing import Sequence


def article(phrase: str) -> str:
    """'a' or 'an' for a phrase that follows it (by spelling, good enough for class names)."""
    return "an" if phrase[:1].lower() in "aeiou" else "a"


def class_prompts(class_names: Sequence[str], template: str = "a photo of a {}") -> list[str]:
    """Zero-shot prompts: `template` filled with each class name; "a {}" becomes "an {}" before a vowel."""
    with_an = re.sub(r"\ba \{\}", "an {}", template)
    return [(with_an if article(name) == "an" else template).format(name) for name in class_names]
