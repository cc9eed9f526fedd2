// Streamed chat completions (SSE): the response must be text/event-stream and end with
// `data: [DONE]`. http_req_duration is the whole stream; time to first byte is
// http_req_waiting.
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e MODEL=sluice-tiny loadtest/k6/stream.js
import http from 'k6/http';
import { check } from 'k6';
import { BASE_URL, PARAMS, chatBody, options as scenario } from './common.js';

export const options = scenario(10);

const PROMPTS = [
  'Tell me about the sea.',
  'What is 12 + 30?',
  'Write one word about winter.',
  'Which is larger, 7 or 9?',
];

export default function () {
  const prompt = PROMPTS[(__VU + __ITER) % PROMPTS.length];
  const res = http.post(
    `${BASE_URL}/v1/chat/completions`,
    chatBody(prompt, { stream: true }),
    PARAMS,
  );
  const body = typeof res.body === 'string' ? res.body : '';
  check(res, {
    'status 200': (r) => r.status === 200,
    'event stream': (r) => (r.headers['Content-Type'] || '').startsWith('text/event-stream'),
    'has a chunk': () => body.includes('"chat.completion.chunk"'),
    'ends with [DONE]': () => body.trimEnd().endsWith('data: [DONE]'),
  });
}
