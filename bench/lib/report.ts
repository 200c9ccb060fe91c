import { execFileSync } from 'node:child_process'
import { cpus, loadavg, totalmem, release, platform } from 'node:os'
import { ROOT } from './paths.ts'
import type { Check } from '../targets.ts'
import type { Outcome } from './rounds.ts'

export function machineInfo (): string[] {
  const list = cpus()
  return [
    `machine: ${list.length} x ${list[0]?.model.trim() ?? 'unknown cpu'}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM, ${platform()} ${release()}`,
    `node ${process.version}, load average at start ${loadavg().map((l) => l.toFixed(2)).join(' ')}`,
    `source: ${sourceVersion()}`
  ]
}

/** The commit measured, and whether src/ had uncommitted changes (the bench runs the working tree). */
function sourceVersion (): string {
  try {
    const git = (...args: string[]): string => execFileSync('git', args, { cwd: ROOT, encoding: 'utf8' }).trim()
    const changed = git('status', '--porcelain', '--', 'src').split('\n').filter(Boolean).length
    return `git ${git('rev-parse', '--short', 'HEAD')}${changed > 0 ? ` + ${changed} uncommitted change(s) under src/` : ', src/ clean'}`
  } catch {
    return 'not a git checkout'
  }
}

const fmt = (n: number, digits = 1): string => Number.isFinite(n) ? n.toFixed(digits) : '-'
/** A table cell: no line breaks, no column separators. */
const cell = (text: string): string => text.replace(/\s+/g, ' ').replace(/\|/g, '\\|')

/** A "x <label>" column: each row's req/s over that of target `key`. */
export interface Comparison { key: string, label: string }

/**
 * The result table as Markdown (it goes into docs/benchmarks.md as printed). `compareTo` adds
 * a "x <label>" column per listed target: every row's req/s over that target's (which may be
 * a row of another table, e.g. the v1 anchor's legacy figure in the modern-era table).
 */
export function renderTable (outcomes: Outcome[], compareTo: Comparison[] = [], rateOf: Map<string, number | undefined> = ratesOf(outcomes)): string {
  const header = ['target', 'req/s', 'req/s per round', 'p50 ms', 'p99 ms', 'server CPU ms/req', 'errors', 'non-2xx', ...compareTo.map((c) => `x ${c.label}`), 'result', 'checks']
  const rows = outcomes.map((o) => {
    const s = o.summary
    if (s === undefined) return [o.target.label, '', '', '', '', '', '', '', ...compareTo.map(() => ''), `**${o.verdict}**`, o.reasons.join('; ')]
    const latencyOnly = o.target.latencyOnly === true
    return [
      o.target.label,
      latencyOnly ? `(${s.count} probes)` : Math.round(s.rate).toString(),
      latencyOnly ? '' : s.roundRates.map((r) => Math.round(r)).join(' / '),
      fmt(s.p50, 2),
      fmt(s.p99, 2),
      fmt(s.cpuPerRequestMs, 3),
      String(s.errors),
      String(s.non2xx),
      ...compareTo.map((c) => {
        const base = rateOf.get(c.key)
        return latencyOnly || base === undefined || base === 0 ? '' : `${fmt(s.rate / base, 2)}`
      }),
      `**${o.verdict}**`,
      [...o.reasons, ...(s.discarded > 0 ? [`${s.discarded} probes discarded (read not parked yet)`] : [])].join('; ')
    ]
  })
  const line = (cells: string[]): string => `| ${cells.map(cell).join(' | ')} |`
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n')
}

export function ratesOf (outcomes: Outcome[]): Map<string, number | undefined> {
  return new Map(outcomes.map((o) => [o.target.key, o.summary?.rate]))
}

/**
 * The targets at a glance: for each listed row, one cell per check of that row (ratio to a
 * reference, p99) with the figure and **met** / **missed**. A ratio is only given when both
 * the row and its reference were measured without errors.
 */
export function renderChecks (outcomes: Outcome[], keys: string[]): string {
  const byKey = new Map(outcomes.map((o) => [o.target.key, o]))
  const rows = keys.map((k) => byKey.get(k)).filter((o): o is Outcome => o !== undefined)
  const first = rows[0]
  if (first === undefined) return ''
  const heading = (check: Check): string => {
    if (check.kind === 'p99') return `p99 (target <= ${check.maxMs} ms)`
    if (check.kind === 'rate') return `req/s (target >= ${check.min})`
    if (check.kind === 'p99-ratio') return `p99 x ${check.of} (target <= ${check.max})`
    const ref = byKey.get(check.of)?.target
    return `x ${ref?.short ?? check.of} (target >= ${check.min})`
  }
  const header = ['era', 'row', ...first.target.checks.map(heading)]
  const clean = (o: Outcome | undefined): boolean => o?.summary !== undefined && o.summary.errors === 0 && o.summary.non2xx === 0 && o.summary.count > 0
  const body = rows.map((o) => {
    const cells = o.target.checks.map((check) => {
      const s = o.summary
      if (s === undefined || !clean(o)) return s === undefined ? 'not measured: **missed**' : `${s.errors} errors, ${s.non2xx} non-2xx: **missed**`
      if (check.kind === 'p99') return `${fmt(s.p99, 1)} ms **${s.p99 <= check.maxMs ? 'met' : 'missed'}**`
      if (check.kind === 'rate') return `${Math.round(s.rate)} **${s.rate >= check.min ? 'met' : 'missed'}**`
      if (check.kind === 'p99-ratio') {
        const p99 = byKey.get(check.of)?.summary?.p99 ?? 0
        return p99 === 0 ? `${check.of} not measured: **missed**` : `${fmt(s.p99 / p99, 1)} **${s.p99 / p99 <= check.max ? 'met' : 'missed'}**`
      }
      const ref = byKey.get(check.of)
      const note = check.note === undefined ? '' : ` (${check.note})`
      if (ref?.summary === undefined || ref.summary.rate === 0) return `${check.of} not measured: **missed**`
      if (!clean(ref)) return `${check.of} had errors: **missed**`
      const ratio = s.rate / ref.summary.rate
      return `${fmt(ratio, 2)}${note} **${ratio >= check.min ? 'met' : 'missed'}**`
    })
    return [o.target.era ?? 'legacy', o.target.label, ...cells]
  })
  const line = (cells: string[]): string => `| ${cells.map(cell).join(' | ')} |`
  return [line(header), line(header.map(() => '---')), ...body.map(line)].join('\n')
}
