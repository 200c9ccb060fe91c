/**
 * `npm run bench`: throughput and latency of this server against two references, measured side
 * by side in one run (interleaved rounds), with pass/fail against the targets of DESIGN.md.
 *
 *   npm run bench                          default run (a few minutes)
 *   npm run bench -- --soak [--requests N] RSS of our server before/after N requests (1,000,000)
 *   npm run bench -- --large [--rows N]    whoami and bus_read with 1M rows in api_tokens and messages
 *   npm run bench -- --profile [--only k]  CPU profile of every server while target k runs (whoami-api)
 *
 * Options: --rounds N (5), --duration S per round (4), --warmup S (2), --connections N (32),
 * --only key,key (a subset of targets). BENCH_DATABASE_URL picks the PostgreSQL server.
 */
import { parseArgs } from 'node:util'
import { compiledRoot, removeBuild, RUNNER } from './lib/build.ts'
import { dropAllBenchDatabases } from './lib/database.ts'
import { stopAll } from './lib/processes.ts'
import { machineInfo, renderTable } from './lib/report.ts'
import { runRounds } from './lib/rounds.ts'
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

let cleaning: Promise<void> | undefined
async function cleanup (): Promise<void> {
  cleaning ??= (async () => {
    await stopAll()
    await dropAllBenchDatabases()
    removeBuild()
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
  if (RUNNER === 'compiled') {
    const t0 = performance.now()
    await compiledRoot()
    console.log(`servers: compiled with tsc (like dist/server.js) in ${((performance.now() - t0) / 1000).toFixed(0)} s; BENCH_RUNNER=tsx runs the sources instead`)
  } else {
    console.log('servers: TypeScript sources through tsx (BENCH_RUNNER=tsx)')
  }
  if (values.soak) {
    failed = !(await runSoak({ requests: number('requests'), connections: options.connections, log }))
  } else if (values.large) {
    failed = !(await runLarge({ ...options, rows: number('rows'), log }))
  } else if (values.profile) {
    await runProfile({ ...options, log })
  } else {
    console.log(`rounds: ${options.rounds} x ${options.seconds} s per target, alternating order, ${options.warmupSeconds} s warm-up each, ${options.connections} connections`)
    const targets = options.only === undefined ? TARGETS : TARGETS.filter((t) => options.only?.includes(t.key) === true)
    const rig = await startRig({ connections: options.connections, log })
    const outcomes = await runRounds(targets, rig, { ...options, log })
    console.log('')
    console.log(renderTable(outcomes, ['ceiling', 'anchor']))
    console.log('')
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
