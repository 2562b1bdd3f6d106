"""ToolInfo -> wire ToolSpec (parameter specs with JSON defaults)."""

from __future__ import annotations

from typing import Any

from ..protocol import codec
from .adapter import ToolInfo


def tool_spec(info: ToolInfo, pb: Any) -> Any:
    spec = pb.ToolSpec(name=info.name, description=info.description,
                       supports_streaming=info.streaming)
    for p in info.params:
        ps = spec.parameters.add(name=p.name, type=p.type, required=p.required)
        if not p.required:
            try:
                ps.default_value.value = codec.dumps(p.default, "default")
                ps.default_value.type_url = codec.STRING_VALUE_URL
            except codec.CodecError:
                pass  # a default that has no JSON form is simply not advertised
    return spec
