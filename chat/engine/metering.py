"""What a run's model calls cost, as the engine meters them (the `call_model_input_filter` of
every run, around the context window of `agents_app.context_window`).

* **Each call is admitted against what is left of the owner's budget.** Admission checked the
  budget once, for the run; a run may make up to `max_turns` calls, each sending up to the
  window's input budget. The first call is what admission reserved for; before each further
  call the meter adds what the run has spent so far to what this call will send, and past the
  run's allowance (the budget left when the run was admitted) it refuses the call
  (`BudgetSpent`): the run ends with a clear `quota_exceeded` reply, its turn closed like any
  failed one. So a run passes what was left of the budget by at most its first call (what the
  reservation stands for) and one call's output.
* **A call cut short is billed.** A stopped or failed call reports no usage, but on a paid API
  its whole input was billed and its output so far too. The meter remembers the open call, and
  `unbilled()` estimates it: its input counted locally with the window's counter, its output as
  streamed. The ledger marks such counts `estimated`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agents.run_config import CallModelData, ModelInputData
from agents.usage import Usage

from agents_app.context_window import InputWindow
from config.errors import AppError


class BudgetSpent(AppError):
    """The next model call would take the run past what is left of the user's budget."""

    code = "quota_exceeded"


@dataclass
class OpenCall:
    agent: Any
    instructions: str | None
    items: list[Any]
    text_start: int  # length of the reply's text when the call began


class CallMeter:
    def __init__(
        self,
        window: InputWindow,
        *,
        allowance: int | None,
        spent: Callable[[], Usage | None],
        text: Callable[[], str],
    ) -> None:
        self.window = window
        self.allowance = allowance  # tokens the run may use; None = unlimited
        self._spent = spent
        self._text = text
        self.calls = 0
        self.open: OpenCall | None = None

    async def __call__(self, data: CallModelData[Any]) -> ModelInputData:
        model_data = await self.window(data)
        # The first call is covered by the run's reservation, admitted with the run.
        if self.allowance is not None and self.calls:
            await self.window.counter.ready()
            sending = self.window.input_tokens(data.agent, model_data.instructions, model_data.input)
            used = self._spent()
            if (used.total_tokens if used is not None else 0) + sending > self.allowance:
                raise BudgetSpent(
                    message=(
                        "This reply would use more tokens than are left of your daily budget, so it "
                        "stopped here. Start a new conversation for a shorter context, or try again "
                        "when your budget resets."
                    )
                )
        self.calls += 1
        self.open = OpenCall(data.agent, model_data.instructions, list(model_data.input), len(self._text()))
        return model_data

    async def unbilled(self) -> dict[str, int] | None:
        """An estimate of the call that was cut short (none reported usage for it), or None."""
        used = self._spent()
        reported = used.requests if used is not None else 0
        if self.open is None or self.calls <= reported:
            return None
        call = self.open
        await self.window.counter.ready()
        input_tokens = self.window.input_tokens(call.agent, call.instructions, call.items)
        streamed = self._text()[call.text_start :]
        output_tokens = self.window.counter.count(streamed) if streamed else 0
        return {
            "requests": 1,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        }
