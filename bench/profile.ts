import { mkdtempSync, readdirSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stopAll } from './lib/processes.ts'
import { renderTable } from './lib/report.ts'
import { runRounds, type RoundOptions } from './lib/rounds.ts'
import { startRig } from './rig.ts'
import { TARGETS } from './targets.ts'

interface ProfileNode { id: number, callFrame: { functionName: string, url: string, lineNumber: number }, children?: number[] }
interface CpuProfile { nodes: ProfileNode[], startTime: number, samples: number[], timeDeltas: number[] }

export interface ProfileOptions extends Omit<RoundOptions, 'log'> {
  connections: number
  only?: string[] | undefined
  log: (line: string) => void
}

/**
 * `--profile`: every server runs under `node --cpu-prof`; the chosen targets (default
 * whoami-api) run for one round; the servers are stopped so the profiles are written; then the
 * profile of each server that did work is summarised: its hottest functions by self time, and
 * self time by module (package, src/ directory, node internals).
 */
export async function runProfile (options: ProfileOptions): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'bus-bench-prof-'))
  const keys = options.only ?? ['whoami-api']
  const seconds = Math.max(10, options.seconds)
  console.log(`profile: ${keys.join(', ')} for ${seconds} s at ${options.connections} connections; profiles in ${dir}`)
  const rig = await startRig({
    connections: options.connections,
    nodeArgs: (name) => ['--cpu-prof', `--cpu-prof-dir=${join(dir, name)}`],
    log: options.log
  })
  const window = { startUs: 0, endUs: 0 }
  const outcomes = await runRounds(TARGETS.filter((t) => keys.includes(t.key)), rig, { ...options, rounds: 1, seconds, window, log: options.log })
  console.log('')
  console.log(renderTable(outcomes.filter((o) => o.summary !== undefined)))
  await stopAll()
  for (const name of readdirSync(dir).sort()) {
    const files = readdirSync(join(dir, name)).filter((f) => f.endsWith('.cpuprofile'))
    for (const file of files) {
      const path = join(dir, name, file)
      const report = summariseProfile(JSON.parse(readFileSync(path, 'utf8')) as CpuProfile, window)
      // Idle servers did no work while the load ran.
      if (report.busyMs < 500) continue
      console.log(`\n### ${name}: ${(report.busyMs / 1000).toFixed(1)} s busy of the ${(report.totalMs / 1000).toFixed(1)} s measured (${path})\n`)
      console.log('| self ms | self % of busy | function | where |')
      console.log('| ---: | ---: | --- | --- |')
      for (const f of report.functions.slice(0, 25)) console.log(`| ${f.ms.toFixed(0)} | ${(100 * f.ms / report.busyMs).toFixed(1)} | ${f.name} | ${f.where} |`)
      console.log('\n| incl. ms | incl. % of busy | function in src/ (self + callees) | where |')
      console.log('| ---: | ---: | --- | --- |')
      for (const f of report.ownInclusive.slice(0, 20)) console.log(`| ${f.ms.toFixed(0)} | ${(100 * f.ms / report.busyMs).toFixed(1)} | ${f.name} | ${f.where} |`)
      console.log('\n| self ms | self % of busy | module |')
      console.log('| ---: | ---: | --- |')
      for (const m of report.modules.slice(0, 15)) console.log(`| ${m.ms.toFixed(0)} | ${(100 * m.ms / report.busyMs).toFixed(1)} | ${m.name} |`)
    }
  }
}

/** Self time per function and module, counting only samples inside `window` (start-up excluded). */
export function summariseProfile (profile: CpuProfile, window: { startUs: number, endUs: number }): {
  totalMs: number,
  busyMs: number
  functions: Array<{ name: string, where: string, ms: number }>
  modules: Array<{ name: string, ms: number }>
  /** Time in our own functions including what they call (src/ only). */
  ownInclusive: Array<{ name: string, where: string, ms: number }>
} {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const parentOf = new Map<number, number>()
  for (const node of profile.nodes) for (const child of node.children ?? []) parentOf.set(child, node.id)
  const self = new Map<number, number>()
  let totalMs = 0
  let at = profile.startTime
  for (let i = 0; i < profile.samples.length; i++) {
    at += profile.timeDeltas[i] ?? 0
    if (at < window.startUs || at > window.endUs) continue
    const ms = (profile.timeDeltas[i + 1] ?? 0) / 1000
    const id = profile.samples[i] as number
    self.set(id, (self.get(id) ?? 0) + ms)
    totalMs += ms
  }
  const functions = new Map<string, { name: string, where: string, ms: number }>()
  const modules = new Map<string, number>()
  const ownInclusive = new Map<string, { name: string, where: string, ms: number }>()
  let idleMs = 0
  for (const [id, ms] of self) {
    const frame = byId.get(id)?.callFrame
    if (frame === undefined) continue
    if (frame.functionName === '(idle)') { idleMs += ms; continue }
    const seen = new Set<string>()
    for (let up: number | undefined = id; up !== undefined; up = parentOf.get(up)) {
      const f = byId.get(up)?.callFrame
      if (f === undefined || !/\/src\//.test(f.url) || f.url.includes('/node_modules/')) continue
      const name = f.functionName === '' ? '(anonymous)' : f.functionName
      const where = shortUrl(f.url, f.lineNumber)
      const key = `${name} ${where}`
      if (seen.has(key)) continue
      seen.add(key)
      const entry = ownInclusive.get(key) ?? { name, where, ms: 0 }
      entry.ms += ms
      ownInclusive.set(key, entry)
    }
    const where = shortUrl(frame.url, frame.lineNumber)
    const name = frame.functionName === '' ? '(anonymous)' : frame.functionName
    const key = `${name} ${where}`
    const entry = functions.get(key) ?? { name, where, ms: 0 }
    entry.ms += ms
    functions.set(key, entry)
    const module = moduleOf(frame.url, name)
    modules.set(module, (modules.get(module) ?? 0) + ms)
  }
  return {
    totalMs,
    busyMs: totalMs - idleMs,
    functions: [...functions.values()].sort((a, b) => b.ms - a.ms),
    modules: [...modules.entries()].map(([name, ms]) => ({ name, ms })).sort((a, b) => b.ms - a.ms),
    ownInclusive: [...ownInclusive.values()].sort((a, b) => b.ms - a.ms)
  }
}

function shortUrl (url: string, line: number): string {
  if (url === '') return ''
  const path = url.replace(/^file:\/\//, '')
  const nm = path.lastIndexOf('/node_modules/')
  const short = nm >= 0 ? path.slice(nm + '/node_modules/'.length) : path.replace(/^.*?\/(src|bench)\//, '$1/')
  return `${short}:${line + 1}`
}

function moduleOf (url: string, name: string): string {
  if (url === '') return name.startsWith('(') ? name : '(native)'
  if (url.startsWith('node:')) return 'node internals'
  const path = url.replace(/^file:\/\//, '')
  const nm = path.lastIndexOf('/node_modules/')
  if (nm >= 0) {
    const parts = path.slice(nm + '/node_modules/'.length).split('/')
    return parts[0]?.startsWith('@') === true ? `${parts[0]}/${parts[1]}` : (parts[0] ?? '?')
  }
  const src = /\/(src|bench)\/(.*)\/[^/]+$/.exec(path) ?? /\/(src|bench)\/([^/]+)$/.exec(path)
  return src === null ? path : `${src[1]}/${src[2]}`
}
