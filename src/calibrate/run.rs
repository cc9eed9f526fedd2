//! The measuring half of calibration: every prompt on every tier, through the same
//! pipeline that serves clients (template, engine, tool-call parsing), greedy, with the
//! cache off. Each tier's cost is measured while it runs: the engine's own prefill and
//! decode seconds per token over the run (what a token costs on that tier at the
//! calibration's concurrency), or, for backends that cannot report it, the request's
//! wall time.

use std::time::Instant;

use async_openai::types::chat::CreateChatCompletionRequest;
use futures::StreamExt;
use serde_json::Value;

use super::data::{label, Answer, Labelled, Prompt};
use super::CalibrateError;
use crate::backend::TierTotals;
use crate::domain::{collect, ChatRequest};
use crate::pipeline::route::Features;
use crate::pipeline::{cache, Pipeline, Tenant};

/// One prompt's answer on one tier.
struct Outcome {
    answer: Answer,
    prompt_tokens: u64,
    completion_tokens: u64,
    wall_seconds: f64,
}

/// The chat request a data line stands for, on `model` (possibly `model@tier`): the
/// body as a client would send it, greedy, parsed by the same code as the HTTP API.
pub fn request(prompt: &Prompt, model: &str) -> Result<ChatRequest, CalibrateError> {
    let mut body = prompt.request.clone();
    body.insert("model".into(), Value::from(model));
    body.entry("temperature").or_insert(Value::from(0));
    body.remove("stream");
    let bytes = serde_json::to_vec(&body).map_err(|e| bad(prompt, e.to_string()))?;
    let wire: CreateChatCompletionRequest =
        crate::http::extract::parse(&bytes).map_err(|e| bad(prompt, e.message))?;
    crate::http::chat_request(wire, Default::default()).map_err(|e| bad(prompt, e.message))
}

fn bad(prompt: &Prompt, message: String) -> CalibrateError {
    CalibrateError::Prompt {
        id: prompt.id.clone(),
        message,
    }
}

/// Run `prompts` on each of `tiers` of `model` (cheapest first) and label them.
pub async fn measure(
    pipeline: &Pipeline,
    model: &str,
    tiers: &[String],
    prompts: &[Prompt],
    concurrency: usize,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Vec<Labelled>, CalibrateError> {
    let tenant = Tenant::anonymous();
    let mut per_tier: Vec<Vec<Outcome>> = Vec::new();
    let mut rates: Vec<Option<(f64, f64)>> = Vec::new();
    for tier in tiers {
        let served = format!("{model}@{tier}");
        let before = pipeline.tier_totals(model, tier);
        let started = Instant::now();
        let outcomes: Vec<Result<Outcome, CalibrateError>> =
            futures::stream::iter(prompts.iter().map(|prompt| {
                let (served, tenant) = (served.as_str(), &tenant);
                async move { one(pipeline, tenant, prompt, served).await }
            }))
            .buffered(concurrency.max(1))
            .collect()
            .await;
        let outcomes = outcomes.into_iter().collect::<Result<Vec<_>, _>>()?;
        let after = pipeline.tier_totals(model, tier);
        let rate = before.zip(after).and_then(|(b, a)| per_token(&b, &a));
        let tokens: u64 = outcomes.iter().map(|o| o.completion_tokens).sum();
        progress(&format!(
            "{served}: {} prompts, {tokens} tokens in {:.1}s{}",
            outcomes.len(),
            started.elapsed().as_secs_f64(),
            rate.map(|(p, d)| format!(
                " (prefill {:.3} ms/token, decode {:.2} ms/token)",
                p * 1e3,
                d * 1e3
            ))
            .unwrap_or_default()
        ));
        per_tier.push(outcomes);
        rates.push(rate);
    }
    let mut labelled = Vec::with_capacity(prompts.len());
    for (p, prompt) in prompts.iter().enumerate() {
        let answers: Vec<Answer> = per_tier.iter().map(|t| t[p].answer.clone()).collect();
        let (ok, same_as_top) = label(&answers, prompt.check.as_ref());
        let cost = per_tier
            .iter()
            .zip(&rates)
            .map(|(t, rate)| {
                let o = &t[p];
                match rate {
                    Some((prefill, decode)) => {
                        o.prompt_tokens as f64 * prefill + o.completion_tokens as f64 * decode
                    }
                    None => o.wall_seconds,
                }
            })
            .collect();
        let features = Features::of(&request(prompt, model)?).0;
        labelled.push(Labelled {
            id: prompt.id.clone(),
            features,
            tiers: tiers.to_vec(),
            ok,
            cost,
            tokens: per_tier.iter().map(|t| t[p].completion_tokens).collect(),
            same_as_top,
        });
    }
    Ok(labelled)
}

/// Seconds per prompt token and per generated token between two readings.
fn per_token(before: &TierTotals, after: &TierTotals) -> Option<(f64, f64)> {
    let prompt = after.prompt_tokens.checked_sub(before.prompt_tokens)?;
    let generated = after
        .generated_tokens
        .checked_sub(before.generated_tokens)?;
    if prompt == 0 || generated == 0 {
        return None;
    }
    Some((
        (after.prefill_seconds - before.prefill_seconds) / prompt as f64,
        (after.decode_seconds - before.decode_seconds) / generated as f64,
    ))
}

async fn one(
    pipeline: &Pipeline,
    tenant: &Tenant,
    prompt: &Prompt,
    served: &str,
) -> Result<Outcome, CalibrateError> {
    let request = request(prompt, served)?;
    let started = Instant::now();
    let failed = |message: String| CalibrateError::Prompt {
        id: prompt.id.clone(),
        message,
    };
    let generation = pipeline
        .chat(
            tenant,
            request,
            crate::pipeline::Asked {
                directive: cache::Directive::NoStore,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| failed(e.message))?;
    let done = collect(generation.events)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let usage = done.usage.unwrap_or_default();
    Ok(Outcome {
        answer: Answer {
            text: done.content,
            tool_calls: done
                .tool_calls
                .into_iter()
                .map(|c| (c.name, c.arguments))
                .collect(),
        },
        prompt_tokens: u64::from(usage.prompt_tokens),
        completion_tokens: u64::from(usage.completion_tokens),
        wall_seconds: started.elapsed().as_secs_f64(),
    })
}
