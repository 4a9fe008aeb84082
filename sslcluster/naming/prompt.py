"""The request sent for one cluster (one user message: the prompt, then its images) and the answer's validation."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Sequence

from sslcluster.naming.images import EncodedImage

MAX_NAME_CHARS = 60
MAX_DESCRIPTION_CHARS = 400


class AnswerError(ValueError):
    """The model's answer is not a JSON object with a valid ``name`` and ``description``."""


@dataclass(frozen=True)
class Answer:
    name: str
    description: str


def prompt_text(prompt: str, taken: Sequence[str] = ()) -> str:
    """The prompt, plus (when asking again for a duplicate) the names other clusters already have."""
    text = prompt.strip()
    if taken:
        shown = ", ".join(json.dumps(t) for t in taken)
        text += (f" Other clusters are already named {shown}; give this cluster a different name that tells it "
                 "apart from them.")
    return text


def build_messages(text: str, images: Sequence[EncodedImage], detail: str = "low") -> list[dict[str, Any]]:
    """Chat messages for one cluster: a single user message with the text part and one image part per image."""
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    for img in images:
        parts.append({"type": "image_url", "image_url": {"url": img.data_url, "detail": detail}})
    return [{"role": "user", "content": parts}]


def _clean(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


def _json_object(text: str) -> Any:
    s = text.strip()
    fence = re.match(r"^```[a-zA-Z]*\s*(.*?)\s*```$", s, re.S)
    if fence:
        s = fence.group(1)
    try:
        return json.loads(s)
    except json.JSONDecodeError:
        start, end = s.find("{"), s.rfind("}")
        if 0 <= start < end:
            try:
                return json.loads(s[start:end + 1])
            except json.JSONDecodeError:
                pass
    raise AnswerError(f"answer is not valid JSON: {_snippet(text)}")


def _snippet(text: str, n: int = 80) -> str:
    one = _clean(text)
    return repr(one if len(one) <= n else one[:n] + "...")


def parse_answer(text: str | None, max_words: int = 3) -> Answer:
    """Validate the model's reply: a JSON object (optionally in a code fence) with a ``name`` of 1 to
    ``max_words`` words and a non-empty one-sentence ``description``."""
    if not text or not text.strip():
        raise AnswerError("answer is empty")
    obj = _json_object(text)
    if not isinstance(obj, dict):
        raise AnswerError(f"answer is JSON but not an object: {_snippet(text)}")
    name, desc = obj.get("name"), obj.get("description")
    if not isinstance(name, str) or not _clean(name):
        raise AnswerError(f"answer has no string 'name': {_snippet(text)}")
    if not isinstance(desc, str) or not _clean(desc):
        raise AnswerError(f"answer has no string 'description': {_snippet(text)}")
    name = _clean(name).strip("\"'").rstrip(".").strip()
    words = name.split()
    if not 1 <= len(words) <= max_words:
        raise AnswerError(f"name {name!r} has {len(words)} words, expected 1 to {max_words}")
    if len(name) > MAX_NAME_CHARS:
        raise AnswerError(f"name {name!r} is longer than {MAX_NAME_CHARS} characters")
    desc = _clean(desc)
    if len(desc) > MAX_DESCRIPTION_CHARS:
        raise AnswerError(f"description is longer than {MAX_DESCRIPTION_CHARS} characters: {_snippet(desc)}")
    return Answer(name, desc)
