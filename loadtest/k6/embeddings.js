// Embeddings on the embedded engine (micro-batched): a few inputs per request.
// Needs an embedding model: `make models` builds all-MiniLM-L6-v2, served as
// `minilm-l6` by config/examples/local-models.toml.
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e EMBED_MODEL=minilm-l6 loadtest/k6/embeddings.js
import http from 'k6/http';
import { check } from 'k6';
import { BASE_URL, PARAMS, json, options as scenario } from './common.js';

const EMBED_MODEL = __ENV.EMBED_MODEL || 'minilm-l6';

export const options = scenario(20);

const SENTENCES = [
  'The cat sits on the mat.',
  'Sales rose by twelve percent in March.',
  'How do I reset my password?',
  'A gateway batches requests for the model.',
  'Rain is expected tomorrow afternoon.',
];

export default function () {
  const first = (__VU + __ITER) % SENTENCES.length;
  const input = [0, 1, 2].map((i) => `${SENTENCES[(first + i) % SENTENCES.length]} (${__ITER})`);
  const res = http.post(
    `${BASE_URL}/v1/embeddings`,
    JSON.stringify({ model: EMBED_MODEL, input }),
    PARAMS,
  );
  const body = json(res);
  check(res, {
    'status 200': (r) => r.status === 200,
    'one vector per input': () =>
      body !== null && Array.isArray(body.data) && body.data.length === input.length &&
      body.data.every((d) => Array.isArray(d.embedding) && d.embedding.length > 0),
  });
}
