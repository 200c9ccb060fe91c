import { setTimeout as sleep } from 'node:timers/promises'
import type { Check, Target } from '../targets.ts'
import { summarize, type Measure, type RoundResult, type Summary } from './load.ts'

export interface RoundOptions {
  rounds: number
  seconds: number
  warmupSeconds: number
  log: (line: string) => void
  /** Filled with the monotonic clock (µs, as in V8 CPU profiles) around the measured rounds. */
  window?: { startUs: number, endUs: number }
}

const nowUs = (): number => Number(process.hrtime.bigint() / 1000n)

export interface Outcome {
  target: Target<any>
  summary?: Summary
  verdict: 'PASS' | 'FAIL' | 'pending' | 'ok'
  reasons: string[]
}

/**
 * Sets up every target, warms each up once, then measures them in interleaved rounds whose
 * order alternates (A B C, C B A, A B C...), so a slow spell on the shared machine lands on
 * all targets instead of one. Rounds merge into one summary per target. A target whose setup
 * throws (its server answered the check call with an error) is not measured and fails with
 * the reason; the other targets run on.
 */
export async function runRounds<R> (targets: Array<Target<R>>, rig: R, options: RoundOptions): Promise<Outcome[]> {
  const active: Array<{ target: Target<R>, measure: Measure, rounds: RoundResult[] }> = []
  const setupFailures = new Map<string, string>()
  for (const target of targets) {
    if (target.pending !== undefined || target.setup === undefined) continue
    options.log(`setup    ${target.key}`)
    try {
      active.push({ target, measure: await target.setup(rig), rounds: [] })
    } catch (err) {
      const reason = (err instanceof Error ? err.message : String(err)).replace(/\s+/g, ' ').slice(0, 400)
      setupFailures.set(target.key, reason)
      options.log(`setup    ${target.key} FAILED: ${reason}`)
    }
  }
  if (options.warmupSeconds > 0) {
    for (const entry of active) {
      options.log(`warm-up  ${entry.target.key} (${options.warmupSeconds} s, discarded)`)
      await entry.measure(options.warmupSeconds)
      await sleep(300)
    }
  }
  if (options.window !== undefined) options.window.startUs = nowUs()
  for (let round = 0; round < options.rounds; round++) {
    const order = round % 2 === 0 ? active : [...active].reverse()
    for (const entry of order) {
      const result = await entry.measure(options.seconds)
      entry.rounds.push(result)
      const rate = entry.target.latencyOnly === true ? `${result.count} probes` : `${Math.round(result.count / result.seconds)} req/s`
      options.log(`round ${round + 1}  ${entry.target.key.padEnd(14)} ${rate}${result.errors + result.non2xx > 0 ? `, ${result.errors} errors, ${result.non2xx} non-2xx` : ''}`)
      await sleep(300)
    }
  }
  if (options.window !== undefined) options.window.endUs = nowUs()
  const summaries = new Map(active.map((e) => [e.target.key, summarize(e.rounds)]))
  return targets.map((target) => evaluate(target, summaries, setupFailures))
}

function evaluate (target: Target<any>, summaries: Map<string, Summary>, setupFailures: Map<string, string>): Outcome {
  if (target.pending !== undefined) return { target, verdict: 'pending', reasons: [target.pending] }
  const failedSetup = setupFailures.get(target.key)
  if (failedSetup !== undefined) return { target, verdict: 'FAIL', reasons: [`not measured, setup failed: ${failedSetup}`] }
  const summary = summaries.get(target.key)
  if (summary === undefined) return { target, verdict: 'pending', reasons: ['not measured'] }
  const reasons: string[] = []
  let failed = false
  if (summary.errors > 0 || summary.non2xx > 0) {
    failed = true
    reasons.push(`${summary.errors} errors, ${summary.non2xx} non-2xx`)
  }
  if (summary.count === 0) {
    failed = true
    reasons.push('nothing completed')
  }
  for (const check of target.checks) {
    const result = applyCheck(check, summary, summaries)
    reasons.push(result.text)
    if (!result.ok) failed = true
  }
  return { target, summary, verdict: failed ? 'FAIL' : target.checks.length > 0 ? 'PASS' : 'ok', reasons }
}

function applyCheck (check: Check, summary: Summary, summaries: Map<string, Summary>): { ok: boolean, text: string } {
  if (check.kind === 'p99') {
    const ok = summary.p99 <= check.maxMs
    return { ok, text: `p99 ${summary.p99.toFixed(1)} ms ${ok ? '<=' : '>'} ${check.maxMs} ms` }
  }
  if (check.kind === 'p99-ratio') {
    const other = summaries.get(check.of)
    if (other === undefined || other.p99 === 0) return { ok: false, text: `${check.of} not measured` }
    const ratio = summary.p99 / other.p99
    const ok = ratio <= check.max
    return { ok, text: `p99 ${ratio.toFixed(1)}x ${check.of}'s ${ok ? '<=' : '>'} ${check.max}x` }
  }
  if (check.kind === 'rate') {
    const ok = summary.rate >= check.min
    return { ok, text: `${Math.round(summary.rate)} req/s ${ok ? '>=' : '<'} ${check.min}` }
  }
  const of = check.note === undefined ? check.of : `${check.of} (${check.note})`
  const other = summaries.get(check.of)
  if (other === undefined || other.rate === 0) return { ok: false, text: `${of} not measured` }
  if (other.errors > 0 || other.non2xx > 0) return { ok: false, text: `${of} had errors, no ratio` }
  const ratio = summary.rate / other.rate
  const ok = ratio >= check.min
  return { ok, text: `${ratio.toFixed(2)}x ${of} ${ok ? '>=' : '<'} ${check.min}x` }
}
