import { execFileSync } from 'node:child_process'
import { cpus, loadavg, totalmem, release, platform } from 'node:os'
import { ROOT } from './paths.ts'
import type { Outcome } from './rounds.ts'

export function machineInfo (): string[] {
  const list = cpus()
  return [
    `machine: ${list.length} x ${list[0]?.model.trim() ?? 'unknown cpu'}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM, ${platform()} ${release()}`,
    `node ${process.version}, load average at start ${loadavg().map((l) => l.toFixed(2)).join(' ')}`,
    `source: ${sourceVersion()}`
  ]
}

/** The commit measured, and whether src/ had uncommitted changes (the bench compiles the working tree). */
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

/**
 * The result table as Markdown (it goes into docs/benchmarks.md as printed). `compareTo` adds
 * a "x <target>" column per listed target: every row's req/s over that target's.
 */
export function renderTable (outcomes: Outcome[], compareTo: string[] = []): string {
  const rateOf = new Map(outcomes.map((o) => [o.target.key, o.summary?.rate]))
  const header = ['target', 'req/s', 'req/s per round', 'p50 ms', 'p99 ms', 'server CPU ms/req', 'errors', 'non-2xx', ...compareTo.map((k) => `x ${k}`), 'result', 'checks']
  const rows = outcomes.map((o) => {
    const s = o.summary
    if (s === undefined) return [o.target.label, '', '', '', '', '', '', '', ...compareTo.map(() => ''), o.verdict, o.reasons.join('; ')]
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
      ...compareTo.map((k) => {
        const base = rateOf.get(k)
        return latencyOnly || base === undefined || base === 0 ? '' : `${fmt(s.rate / base, 2)}`
      }),
      `**${o.verdict}**`,
      [...o.reasons, ...(s.discarded > 0 ? [`${s.discarded} probes discarded (read not parked yet)`] : [])].join('; ')
    ]
  })
  const line = (cells: string[]): string => `| ${cells.join(' | ')} |`
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n')
}
