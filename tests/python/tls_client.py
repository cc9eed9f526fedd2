"""The official OpenAI Python SDK against sluice over HTTPS, trusting only the CA the
calling test made (tests/tls.rs runs this; it is not a pytest module).

usage: tls_client.py BASE_URL CA_PEM MODEL

Prints the answer of one plain and one streamed chat completion, one per line.
"""

import ssl
import sys

import httpx
import openai


def main() -> None:
    base_url, ca_path, model = sys.argv[1], sys.argv[2], sys.argv[3]
    context = ssl.create_default_context(cafile=ca_path)
    http = httpx.Client(verify=context, timeout=30)
    client = openai.OpenAI(base_url=base_url, api_key="unused", http_client=http)
    messages = [{"role": "user", "content": "hello over https"}]

    answer = client.chat.completions.create(model=model, messages=messages)
    print(answer.choices[0].message.content)

    stream = client.chat.completions.create(model=model, messages=messages, stream=True)
    print("".join(c.choices[0].delta.content or "" for c in stream if c.choices))


if __name__ == "__main__":
    main()
