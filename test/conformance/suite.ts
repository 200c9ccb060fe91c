import { spawn } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'

/** The suite's CLI, run by the Node running the tests (its `#!/usr/bin/env node` may find an older one). */
const CLI = join(dirname(createRequire(import.meta.url).resolve('@modelcontextprotocol/conformance/package.json')), 'dist', 'index.js')

/** One check as the suite writes it to `checks.json`. */
export interface Check {
  id: string
  status: 'SUCCESS' | 'FAILURE' | 'WARNING' | 'SKIPPED' | 'INFO' | string
  description?: string
  errorMessage?: string
}

export interface ScenarioResult { scenario: string, checks: Check[] }

export interface CliRun {
  /** Every scenario the CLI announced, in order, with its checks. */
  scenarios: ScenarioResult[]
  /** stdout and stderr, interleaved as they came. */
  output: string
  exitCode: number | null
}

export interface RunOptions {
  /** `--output-dir`; the suite writes one `<kind>-<scenario>-<timestamp>/checks.json` per scenario. */
  outputDir: string
  /** The results directory prefix: `server` or `authorization-server`. */
  kind: 'server' | 'authorization-server'
  /** The whole CLI run is killed after this long (its own per-scenario timeout is shorter). */
  timeoutMs: number
  /** Called with each stdout line as it arrives (the authorization scenario prints a URL to follow). */
  onLine?: (line: string, stop: (why: string) => void) => void
}

/**
 * Runs the conformance CLI and collects its results from the output directory. A scenario the
 * CLI announced but wrote no `checks.json` for (it threw) gets one failing check named after it,
 * carrying the CLI's error line, as in the CLI's own summary.
 */
export async function runConformance (args: string[], options: RunOptions): Promise<CliRun> {
  const child = spawn(process.execPath, [CLI, ...args, '--output-dir', options.outputDir], {
    // Not tap's loaders or coverage hooks: the CLI is plain JavaScript.
    env: { ...process.env, NODE_OPTIONS: '', NO_COLOR: '1' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  let pending = ''
  let stopped: string | undefined
  const stop = (why: string): void => {
    stopped ??= why
    child.kill('SIGKILL')
  }
  child.stdout.setEncoding('utf8')
  child.stderr.setEncoding('utf8')
  child.stdout.on('data', (text: string) => {
    output += text
    pending += text
    const lines = pending.split('\n')
    pending = lines.pop() ?? ''
    for (const line of lines) options.onLine?.(line.trimEnd(), stop)
  })
  child.stderr.on('data', (text: string) => { output += text })
  const timer = setTimeout(() => { stop(`the conformance CLI ran longer than ${options.timeoutMs} ms`) }, options.timeoutMs)
  // A test process that ends early (tap's timeout) takes the CLI and its callback listener with it.
  const killOnExit = (): void => { child.kill('SIGKILL') }
  process.once('exit', killOnExit)
  // Never rejects: a CLI that cannot start shows as a run without scenarios, with the reason in its output.
  const exitCode = await new Promise<number | null>((resolve) => {
    child.once('error', (err) => { output += `\n[harness] ${err.message}\n`; resolve(null) })
    child.once('close', (code) => { resolve(code) })
  })
  clearTimeout(timer)
  process.removeListener('exit', killOnExit)
  if (stopped !== undefined) output += `\n[harness] stopped the CLI: ${stopped}\n`
  return { scenarios: collectResults(output, options.outputDir, options.kind, stopped), output, exitCode }
}

function collectResults (output: string, outputDir: string, kind: string, stopped: string | undefined): ScenarioResult[] {
  const announced = [...output.matchAll(/^=== Running scenario: (\S+) ===$/gm)].map((m) => m[1] as string)
  const directories = existsSync(outputDir) ? readdirSync(outputDir) : []
  return announced.map((scenario) => {
    const pattern = new RegExp(`^${kind}-${escapeRegExp(scenario)}-\\d{4}-\\d{2}-\\d{2}T`)
    const directory = directories.find((name) => pattern.test(name))
    const file = directory === undefined ? undefined : join(outputDir, directory, 'checks.json')
    if (file !== undefined && existsSync(file)) return { scenario, checks: JSON.parse(readFileSync(file, 'utf8')) as Check[] }
    const thrown = new RegExp(`^Failed to run scenario ${escapeRegExp(scenario)}: (.*)$`, 'm').exec(output)?.[1]
    return {
      scenario,
      checks: [{ id: scenario, status: 'FAILURE', errorMessage: thrown ?? stopped ?? 'the CLI wrote no checks.json for this scenario' }]
    }
  })
}

function escapeRegExp (text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

/** A check a scenario is allowed to fail: why, and what its failure message must look like. */
export interface ExpectedFailure {
  reason: string
  /** A regular expression (case-insensitive) every failing occurrence's message must match. */
  failsWith: string
}

/** scenario → check id → expected failure. */
export type ExpectedScenarios = Record<string, Record<string, ExpectedFailure>>

export interface Verdict {
  /** Failing checks that are not listed, or listed but failing for another reason: "id: message". */
  unexpected: string[]
  /** Listed checks that no longer fail (passed, warned, skipped) or no longer run in a clean scenario. */
  stale: string[]
  /** Listed checks that failed as listed. */
  expected: string[]
}

const SEVERITY: Record<string, number> = { FAILURE: 4, WARNING: 3, SKIPPED: 2, INFO: 1, SUCCESS: 0 }

/**
 * Judges one scenario against its expected failures. A check id can occur several times (loops,
 * retries); it fails if any occurrence fails. A listed check that is absent is tolerated only when
 * the scenario failed elsewhere (the suite skips later checks after a failed prerequisite).
 */
export function judge (result: ScenarioResult, expected: Record<string, ExpectedFailure> = {}): Verdict {
  const byId = new Map<string, Check[]>()
  for (const check of result.checks) byId.set(check.id, [...(byId.get(check.id) ?? []), check])
  const verdict: Verdict = { unexpected: [], stale: [], expected: [] }
  for (const [id, checks] of byId) {
    const failures = checks.filter((check) => check.status === 'FAILURE')
    if (failures.length === 0) continue
    const listed = expected[id]
    const messages = failures.map(messageOf)
    if (listed === undefined) {
      verdict.unexpected.push(`${id}: ${unique(messages).join(' / ')}`)
      continue
    }
    const pattern = new RegExp(listed.failsWith, 'i')
    const other = messages.filter((message) => !pattern.test(message))
    if (other.length > 0) {
      verdict.unexpected.push(`${id}: ${unique(other).join(' / ')} (listed for "${listed.reason}", whose failure must match /${listed.failsWith}/)`)
    } else {
      verdict.expected.push(id)
    }
  }
  const failedElsewhere = result.checks.some((check) => check.status === 'FAILURE')
  for (const [id, listed] of Object.entries(expected)) {
    const checks = byId.get(id)
    if (checks === undefined) {
      if (!failedElsewhere) verdict.stale.push(`${id}: listed (${listed.reason}) but not run, and nothing else failed; remove it`)
      continue
    }
    const worst = checks.reduce((a, b) => ((SEVERITY[b.status] ?? 0) > (SEVERITY[a.status] ?? 0) ? b : a))
    if (worst.status !== 'FAILURE') verdict.stale.push(`${id}: listed (${listed.reason}) but now ${worst.status}; remove it from expected-failures.json`)
  }
  return verdict
}

function messageOf (check: Check): string {
  const text = (check.errorMessage ?? check.description ?? '(no message)').replace(/\s+/g, ' ').trim()
  return text.length > 400 ? `${text.slice(0, 400)}…` : text
}

function unique (items: string[]): string[] {
  return [...new Set(items)]
}
