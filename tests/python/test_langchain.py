"""LangChain's `ChatOpenAI` against the embedded engine: tool calls bound with
`bind_tools`, whole and streamed (LangChain builds the call from the streamed
`tool_call_chunks`), and `with_structured_output`. The shipped config with the response
cache off, so the streamed answer is generated, not replayed from the whole one.
"""

from __future__ import annotations

from typing import Literal

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

QUESTION = "What is 12 * 7?"
CALCULATOR = {"type": "function", "function": {
    "name": "calculator", "description": "Evaluate an arithmetic expression", "strict": True,
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                   "required": ["expression"], "additionalProperties": False}}}


class CalculatorPick(BaseModel):
    """A tool, an expression and an answer (all shaped by the schema alone)."""

    tool: Literal["calculator", "sql_query", "current_time"]
    expression: str = Field(max_length=12)
    answer: int = Field(ge=0, le=1000)


@pytest.fixture
def llm(sluice_default_uncached):
    return ChatOpenAI(base_url=sluice_default_uncached.url + "/v1", api_key="x",
                      model="sluice-tiny", temperature=0, max_retries=0, timeout=30)


def test_bound_tool_is_called_and_streamed_chunks_sum_to_the_same_call(llm):
    with_tools = llm.bind_tools([CALCULATOR])

    whole = with_tools.invoke(QUESTION)
    assert isinstance(whole, AIMessage)
    assert whole.response_metadata["finish_reason"] == "tool_calls"
    assert not whole.invalid_tool_calls
    [call] = whole.tool_calls
    assert call["name"] == "calculator"
    assert isinstance(call["args"], dict)
    assert call["args"]["expression"].replace(" ", "") == "12*7"

    chunks = list(with_tools.stream(QUESTION))
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert isinstance(total, AIMessageChunk)
    assert total.response_metadata["finish_reason"] == "tool_calls"
    assert not total.invalid_tool_calls
    [streamed] = total.tool_calls
    assert (streamed["name"], streamed["args"]) == (call["name"], call["args"])
    assert streamed["id"].startswith("call_") and streamed["id"] != call["id"]
    # The arguments arrived in several chunks as they were generated, the name once.
    pieces = [c for chunk in chunks for c in chunk.tool_call_chunks]
    assert len([c for c in pieces if c["args"]]) >= 2, pieces
    assert [c["name"] for c in pieces if c["name"]] == ["calculator"]


def test_with_structured_output_returns_the_pydantic_object(llm):
    result = llm.with_structured_output(CalculatorPick, include_raw=True).invoke(QUESTION)
    assert result["parsing_error"] is None
    assert isinstance(result["parsed"], CalculatorPick)
    assert CalculatorPick.model_validate_json(result["raw"].content) == result["parsed"]
