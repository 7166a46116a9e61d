"""The chat-completions client (httpx), behind the shared gate of the endpoint: requests per
minute and tokens per minute for every worker, ``Retry-After`` on 429, backoff on 5xx and
timeouts (the replay sources' :func:`shared.replay.retry.call`)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from shared.ledger.llm import SCHEMA, Settings
from shared.replay.limits import Gate
from shared.replay.retry import Attempts, BadAnswer, RetryPolicy, call, raise_if_transient, refused, upstream

MAX_TOKENS = 800
ENDPOINT = "the LLM endpoint"


def estimated_tokens(messages: list[dict[str, str]]) -> int:
    """What a request will cost of the tokens-per-minute budget (about 4 characters a token)."""
    return sum(len(m["content"]) for m in messages) // 4 + MAX_TOKENS


class ChatClient:
    def __init__(
        self,
        settings: Settings,
        gate: Gate,
        policy: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        self.settings = settings
        self.gate = gate
        self.policy = policy or RetryPolicy(tries=8)
        headers = {"Content-Type": "application/json"}
        if settings.api_key:
            headers["Authorization"] = f"Bearer {settings.api_key}"
        self.client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(connect=5.0, read=timeout_s, write=10.0, pool=30.0),
            transport=transport,
        )

    def close(self) -> None:
        self.client.close()

    def ask(self, messages: list[dict[str, str]], attempts: Attempts) -> tuple[str, dict[str, int]]:
        """The answer's text and its token usage."""
        body = {
            "model": self.settings.model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": MAX_TOKENS,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "ledger_claims", "strict": True, "schema": SCHEMA},
            },
        }
        return call(
            self.gate, self.policy, lambda: self._post(body), attempts, weight=estimated_tokens(messages)
        )

    def _post(self, body: dict[str, Any]) -> tuple[str, dict[str, int]]:
        url = f"{self.settings.base_url}/chat/completions"
        with upstream(ENDPOINT):
            response = self.client.post(url, content=json.dumps(body))
        status = response.status_code
        if status in (401, 403):
            raise refused(ENDPOINT, status, "RETAPE_LLM_API_KEY", bool(self.settings.api_key))
        raise_if_transient(response, ENDPOINT)
        if status != 200:
            raise BadAnswer(f"the LLM endpoint answered HTTP {status}")
        try:
            data = response.json()
            content = data["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise BadAnswer("the LLM endpoint's answer is not a chat completion") from None
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        tokens = {
            "prompt": int(usage.get("prompt_tokens") or 0),
            "completion": int(usage.get("completion_tokens") or 0),
        }
        return (content if isinstance(content, str) else json.dumps(content)), tokens
