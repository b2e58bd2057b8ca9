"""Exact per-request results, kept as flat arrays so a worker can ship them in one message.

Times are seconds relative to the run's start ``t0`` (one CLOCK_MONOTONIC for all processes).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field


@dataclass(slots=True)
class RequestRecords:
    index: array[int] = field(default_factory=lambda: array("q"))
    intended_s: array[float] = field(default_factory=lambda: array("d"))
    sent_s: array[float] = field(default_factory=lambda: array("d"))
    end_s: array[float] = field(default_factory=lambda: array("d"))
    ttft_s: array[float] = field(default_factory=lambda: array("d"))
    output_tokens: array[int] = field(default_factory=lambda: array("q"))
    input_tokens: array[int] = field(default_factory=lambda: array("q"))
    tokens_from_usage: array[int] = field(default_factory=lambda: array("b"))
    itl_counts: array[int] = field(default_factory=lambda: array("q"))
    itls_s: array[float] = field(default_factory=lambda: array("d"))
    #: "" for success, else e.g. "connect", "timeout", "http_500", "stream_error".
    errors: list[str] = field(default_factory=list)
    #: The first few error messages per class, for the report.
    error_samples: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.index)

    def add(
        self,
        *,
        index: int,
        intended_s: float,
        sent_s: float,
        end_s: float,
        ttft_s: float,
        output_tokens: int,
        input_tokens: int,
        from_usage: bool,
        itls_s: list[float],
        error: str,
    ) -> None:
        self.index.append(index)
        self.intended_s.append(intended_s)
        self.sent_s.append(sent_s)
        self.end_s.append(end_s)
        self.ttft_s.append(ttft_s)
        self.output_tokens.append(output_tokens)
        self.input_tokens.append(input_tokens)
        self.tokens_from_usage.append(1 if from_usage else 0)
        self.itl_counts.append(len(itls_s))
        self.itls_s.extend(itls_s)
        self.errors.append(error)

    def extend(self, other: RequestRecords) -> None:
        self.index.extend(other.index)
        self.intended_s.extend(other.intended_s)
        self.sent_s.extend(other.sent_s)
        self.end_s.extend(other.end_s)
        self.ttft_s.extend(other.ttft_s)
        self.output_tokens.extend(other.output_tokens)
        self.input_tokens.extend(other.input_tokens)
        self.tokens_from_usage.extend(other.tokens_from_usage)
        self.itl_counts.extend(other.itl_counts)
        self.itls_s.extend(other.itls_s)
        self.errors.extend(other.errors)
        for kind, message in other.error_samples.items():
            self.error_samples.setdefault(kind, message)

    def itls_of(self) -> list[array[float]]:
        """Each request's inter-token latencies, in record order."""
        out: list[array[float]] = []
        position = 0
        for count in self.itl_counts:
            out.append(self.itls_s[position : position + count])
            position += count
        return out

    def select(self, keep: list[bool]) -> RequestRecords:
        """The records whose ``keep`` flag is set, in order."""
        picked = RequestRecords(error_samples=dict(self.error_samples))
        for row, itls in enumerate(self.itls_of()):
            if not keep[row]:
                continue
            picked.add(
                index=self.index[row],
                intended_s=self.intended_s[row],
                sent_s=self.sent_s[row],
                end_s=self.end_s[row],
                ttft_s=self.ttft_s[row],
                output_tokens=self.output_tokens[row],
                input_tokens=self.input_tokens[row],
                from_usage=bool(self.tokens_from_usage[row]),
                itls_s=list(itls),
                error=self.errors[row],
            )
        return picked


def error_family(error: str) -> str:
    """``http_503`` → ``http_5xx``; other classes are their own family."""
    if error.startswith("http_") and len(error) == 8:
        return f"http_{error[5]}xx"
    return error
