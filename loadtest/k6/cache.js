// The same deterministic request (temperature 0) again and again: after the first, the
// response cache answers (x-sluice-cache: hit), so this measures the gateway itself.
// Fails unless at least 90% of the answers are cache hits.
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e MODEL=sluice-tiny loadtest/k6/cache.js
import http from 'k6/http';
import { check } from 'k6';
import { Rate } from 'k6/metrics';
import { BASE_URL, MODEL, PARAMS, json, options as scenario } from './common.js';

const cacheHits = new Rate('cache_hits');

export const options = scenario(50, { cache_hits: ['rate>0.9'] });

const BODY = JSON.stringify({
  model: MODEL,
  messages: [{ role: 'user', content: 'What is 17 * 23?' }],
  max_tokens: 16,
  temperature: 0,
});

export default function () {
  const res = http.post(`${BASE_URL}/v1/chat/completions`, BODY, PARAMS);
  const body = json(res);
  cacheHits.add(res.headers['X-Sluice-Cache'] === 'hit');
  check(res, {
    'status 200': (r) => r.status === 200,
    'has a message': () =>
      body !== null && Array.isArray(body.choices) && body.choices.length > 0,
  });
}
