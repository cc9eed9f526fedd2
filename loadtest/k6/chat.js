// Chat completions with varied prompts and sampling on: every request is generated
// (a sampled answer is not cached), so this measures the engine behind the gateway.
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e MODEL=sluice-tiny loadtest/k6/chat.js
import http from 'k6/http';
import { check } from 'k6';
import { BASE_URL, PARAMS, chatBody, json, options as scenario } from './common.js';

export const options = scenario(10);

const PROMPTS = [
  'What is 17 * 23?',
  'Name a colour of the sky.',
  'Say hello in French.',
  'What is the capital of Italy?',
  'Count from one to five.',
  'What day comes after Monday?',
];

export default function () {
  const prompt = PROMPTS[(__VU + __ITER) % PROMPTS.length];
  const res = http.post(
    `${BASE_URL}/v1/chat/completions`,
    chatBody(prompt),
    PARAMS,
  );
  const body = json(res);
  check(res, {
    'status 200': (r) => r.status === 200,
    'has a message': () =>
      body !== null && Array.isArray(body.choices) && body.choices.length > 0 &&
      typeof body.choices[0].message === 'object',
  });
}
