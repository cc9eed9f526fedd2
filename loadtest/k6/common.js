// Shared by the k6 scenarios in this folder (chat.js, stream.js, cache.js,
// embeddings.js): the target, the open-model scenario and the pass/fail thresholds.
//
// Environment (k6 run -e NAME=value, or the process environment):
//   BASE_URL   the gateway                        default http://127.0.0.1:8080
//   MODEL      chat model                         default sluice-tiny
//   API_KEY    sent as a bearer token when set    (configs with [[auth.keys]])
//   RATE       requests started per second        default per script
//   DURATION   how long requests are started      default 20s
//   VUS        virtual users allocated up front   default 20 (MAX_VUS: 100)
// tools/ops/k6.sh runs every script against a sluice it starts on loopback.

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
export const MODEL = __ENV.MODEL || 'sluice-tiny';

export const PARAMS = {
  headers: Object.assign(
    { 'Content-Type': 'application/json' },
    __ENV.API_KEY ? { Authorization: `Bearer ${__ENV.API_KEY}` } : {},
  ),
  timeout: '30s',
};

// A constant arrival rate (an open model: requests keep coming at RATE/s however slow
// the answers get, as real clients do), and the thresholds that make `k6 run` exit 99
// when crossed. `extra` adds script-specific thresholds.
export function options(defaultRate, extra = {}) {
  return {
    scenarios: {
      load: {
        executor: 'constant-arrival-rate',
        rate: Number(__ENV.RATE || defaultRate),
        timeUnit: '1s',
        duration: __ENV.DURATION || '20s',
        preAllocatedVUs: Number(__ENV.VUS || 20),
        maxVUs: Number(__ENV.MAX_VUS || 100),
        gracefulStop: '10s',
      },
    },
    thresholds: Object.assign(
      {
        http_req_duration: ['p(95)<500'],
        http_req_failed: ['rate<0.01'],
        checks: ['rate>0.99'],
      },
      extra,
    ),
    summaryTrendStats: ['avg', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
  };
}

// A chat request body: `prompt` as the user message, 16 tokens, sampled (so answers are
// generated, not replayed from the cache); `extra` adds or overrides fields.
export function chatBody(prompt, extra = {}) {
  return JSON.stringify({
    model: MODEL,
    messages: [{ role: 'user', content: prompt }],
    max_tokens: 16,
    temperature: 0.8,
    ...extra,
  });
}

export function json(res) {
  try {
    return res.json();
  } catch (_) {
    return null;
  }
}
