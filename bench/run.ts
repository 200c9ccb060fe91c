/**
 * `npm run bench`: throughput and latency of this server against three references (a bare
 * Fastify ceiling, the MCP SDK v1 and v2 stateless patterns), in both protocol eras (2025
 * "legacy", 2026-07-28 "modern"), measured side by side in one run (interleaved rounds), with
 * pass/fail against the targets in bench/targets.ts. Every server runs its TypeScript sources
 * directly (`node file.ts`, Node's type stripping), as production runs `node src/server.ts`.
 *
 *   npm run bench                          default run (a few minutes)
 *   npm run bench -- --soak [--requests N] RSS of our server before/after N requests (1,000,000)
 *   npm run bench -- --large [--rows N]    every bus figure, whoami and refresh with 1M rows in api_tokens, messages and audit_log
 *   npm run bench -- --profile [--only k]  CPU profile of every server while target k runs (whoami-api)
 *   npm run bench -- --send-designs     message numbering: one counter row vs per-stream order, hot channel and 100 channels, readers checking no id is skipped
 *   npm run bench -- --flood [--tokens N]  a valid client's p99 alone and while its address floods /mcp with N bad tokens (10,000)
 *   npm run bench -- --listen [--streams N] [--messages M]  notification latency with N listen streams on one replica (1,000),
 *                                          M sends through another (200), beside the long-poll's wake-up; memory per stream
 *
 * Options: --rounds N (5), --duration S per round (4), --warmup S (2), --connections N (32),
 * --only key,key (a subset of targets). BENCH_DATABASE_URL picks the PostgreSQL server.
 */
import { parseArgs } from 'node:util'
import { dropAllBenchDatabases } from './lib/database.ts'
import { stopAll } from './lib/processes.ts'
import { machineInfo, ratesOf, renderChecks, renderTable, type Comparison } from './lib/report.ts'
import { runRounds, type Outcome } from './lib/rounds.ts'
import { ERA_LABEL, ERAS, type Era } from './lib/rpc.ts'
import { runFlood } from './flood.ts'
import { runListen } from './listen.ts'
import { runSendDesigns } from './send-designs.ts'
import { runLarge } from './large.ts'
import { runProfile } from './profile.ts'
import { startRig } from './rig.ts'
import { runSoak } from './soak.ts'
import { TARGETS } from './targets.ts'

const { values } = parseArgs({
  options: {
    soak: { type: 'boolean', default: false },
    large: { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    flood: { type: 'boolean', default: false },
    listen: { type: 'boolean', default: false },
    'send-designs': { type: 'boolean', default: false },
    streams: { type: 'string', default: '1000' },
    messages: { type: 'string', default: '200' },
    tokens: { type: 'string', default: '10000' },
    requests: { type: 'string', default: '1000000' },
    rows: { type: 'string', default: '1000000' },
    rounds: { type: 'string', default: '5' },
    duration: { type: 'string', default: '4' },
    warmup: { type: 'string', default: '2' },
    connections: { type: 'string', default: '32' },
    only: { type: 'string' }
  },
  strict: true
})

const started = performance.now()
const log = (line: string): void => { process.stdout.write(`  ${line}\n`) }
const number = (name: keyof typeof values): number => {
  const n = Number(values[name])
  if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} must be a number`)
  return n
}
const options = {
  rounds: number('rounds'),
  seconds: number('duration'),
  warmupSeconds: number('warmup'),
  connections: number('connections'),
  only: values.only?.split(',').map((k) => k.trim()).filter(Boolean)
}

/** The ratio columns of each era's table: to that era's ceiling and anchors (v1: legacy only). */
const COMPARE: Record<Era, Comparison[]> = {
  legacy: [
    { key: 'ceiling', label: 'ceiling' },
    { key: 'anchor-v2', label: 'SDK v2 anchor' },
    { key: 'anchor-v1', label: 'SDK v1 anchor' }
  ],
  modern: [
    { key: 'ceiling-modern', label: 'ceiling' },
    { key: 'anchor-v2-modern', label: 'SDK v2 anchor' },
    { key: 'anchor-v1', label: 'SDK v1 anchor (legacy figure)' }
  ]
}

/** One table per era, then the whoami targets at a glance. */
function printResults (outcomes: Outcome[]): void {
  const rates = ratesOf(outcomes)
  for (const era of ERAS) {
    const rows = outcomes.filter((o) => (o.target.era ?? 'legacy') === era)
    if (rows.length === 0) continue
    console.log('')
    console.log(`${ERA_LABEL[era]}${era === 'modern' ? ', the v1 SDK has no modern era: its column is its legacy figure' : ''}`)
    console.log('')
    console.log(renderTable(rows, COMPARE[era], rates))
  }
  const ours = ['whoami-oauth', 'whoami-api', 'whoami-external', 'whoami-oauth-modern', 'whoami-api-modern', 'whoami-external-modern'].filter((k) => rates.has(k))
  if (ours.length > 0) {
    console.log('')
    console.log('targets (bench/targets.ts WHOAMI_TARGETS), ours on PostgreSQL:')
    console.log('')
    console.log(renderChecks(outcomes, ours))
  }
  const bus = ['send-hot', 'send-spread', 'read'].filter((k) => rates.has(k))
  if (bus.length > 0) {
    console.log('')
    console.log('bus targets (bench/targets.ts BUS_TARGETS, issue 15), ours on PostgreSQL:')
    console.log('')
    console.log(renderChecks(outcomes, bus))
  }
  if (rates.has('refresh')) {
    console.log('')
    console.log(renderChecks(outcomes, ['refresh']))
  }
  console.log('')
}

let cleaning: Promise<void> | undefined
async function cleanup (): Promise<void> {
  cleaning ??= (async () => {
    await stopAll()
    await dropAllBenchDatabases()
  })()
  await cleaning
}
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    process.stderr.write(`\n${signal}: stopping servers and dropping the bench database\n`)
    void cleanup().finally(() => process.exit(130))
  })
}

console.log(`$ npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`)
for (const line of machineInfo()) console.log(line)

let failed = false
try {
  console.log('servers: TypeScript sources run by node itself (type stripping), as production runs `node src/server.ts`')
  if (values.soak) {
    failed = !(await runSoak({ requests: number('requests'), connections: options.connections, log }))
  } else if (values.large) {
    failed = !(await runLarge({ ...options, rows: number('rows'), log }))
  } else if (values.listen) {
    failed = !(await runListen({ streams: number('streams'), messages: number('messages'), log }))
  } else if (values['send-designs']) {
    failed = !(await runSendDesigns({ connections: options.connections, rounds: options.rounds, seconds: options.seconds, log }))
  } else if (values.flood) {
    failed = !(await runFlood({ ...options, tokens: number('tokens'), log }))
  } else if (values.profile) {
    await runProfile({ ...options, log })
  } else {
    console.log(`rounds: ${options.rounds} x ${options.seconds} s per target, alternating order, ${options.warmupSeconds} s warm-up each, ${options.connections} connections`)
    const targets = options.only === undefined ? TARGETS : TARGETS.filter((t) => options.only?.includes(t.key) === true)
    const rig = await startRig({ connections: options.connections, log })
    const outcomes = await runRounds(targets, rig, { ...options, log })
    printResults(outcomes)
    failed = outcomes.some((o) => o.verdict === 'FAIL')
    const pending = outcomes.filter((o) => o.verdict === 'pending').map((o) => o.target.key)
    console.log(`result: ${failed ? 'FAIL' : 'PASS'}${pending.length > 0 ? ` (pending: ${pending.join(', ')})` : ''}`)
  }
} catch (err) {
  failed = true
  console.error(err)
} finally {
  await cleanup()
}
console.log(`elapsed: ${((performance.now() - started) / 1000).toFixed(0)} s`)
process.exit(failed ? 1 : 0)
