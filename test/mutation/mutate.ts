/**
 * `npm run mutate [-- module ...]`: runs Stryker (stryker.config.mjs) once per security-critical
 * module, each with only its own focused tests, then prints the score table that
 * docs/security.md records, and the surviving mutants. Exits 1 when a module scores below 90 %
 * or Stryker fails.
 */
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync, rmSync } from 'node:fs'

interface Module { mutate: string[], tests: string[] }
// Imported by URL: the config is plain JavaScript, which the type checker does not read.
const { modules } = await import(new URL('../../stryker.config.mjs', import.meta.url).href) as { modules: Record<string, Module> }

const GOAL = 90
const all = Object.keys(modules)
const requested = process.argv.slice(2)
const unknown = requested.filter((name) => !all.includes(name))
if (unknown.length > 0) {
  console.error(`unknown module ${unknown.join(', ')}; modules: ${all.join(', ')}`)
  process.exit(2)
}
const names = requested.length > 0 ? requested : all

interface Mutant { id: string, mutatorName: string, replacement?: string, status: string, location: { start: { line: number, column: number } } }
interface Report { files: Record<string, { source: string, mutants: Mutant[] }> }

const rows: string[] = []
const survivors: string[] = []
let failed = false
for (const name of names) {
  const report = `reports/mutation/${name}.json`
  rmSync(report, { force: true })
  console.log(`\n=== ${name}: ${(modules[name] as Module).mutate.join(' ')}`)
  const run = spawnSync('npx', ['stryker', 'run', 'stryker.config.mjs'], { stdio: 'inherit', env: { ...process.env, STRYKER_MODULE: name } })
  if (run.status !== 0 || !existsSync(report)) {
    console.error(`${name}: Stryker failed (exit ${run.status ?? run.signal})`)
    failed = true
    continue
  }
  const { files } = JSON.parse(readFileSync(report, 'utf8')) as Report
  const count: Record<string, number> = {}
  for (const [file, { source, mutants }] of Object.entries(files)) {
    const lines = source.split('\n')
    for (const mutant of mutants) {
      count[mutant.status] = (count[mutant.status] ?? 0) + 1
      if (mutant.status === 'Survived' || mutant.status === 'NoCoverage') {
        const { line, column } = mutant.location.start
        survivors.push(`${name} ${file}:${line}:${column} ${mutant.mutatorName} → ${JSON.stringify(mutant.replacement ?? '')}\n    ${(lines[line - 1] ?? '').trim()}`)
      }
    }
  }
  const detected = (count.Killed ?? 0) + (count.Timeout ?? 0)
  const valid = detected + (count.Survived ?? 0) + (count.NoCoverage ?? 0)
  const score = valid === 0 ? 100 : (100 * detected) / valid
  if (score < GOAL) failed = true
  rows.push(`| ${name} | ${Object.keys(files).join(', ')} | ${valid} | ${count.Killed ?? 0} | ${count.Timeout ?? 0} | ${(count.Survived ?? 0) + (count.NoCoverage ?? 0)} | ${score.toFixed(1)} % |`)
}

console.log('\n| Module | Files | Mutants | Killed | Timed out | Survived | Score |')
console.log('|---|---|---|---|---|---|---|')
for (const row of rows) console.log(row)
if (survivors.length > 0) console.log(`\nSurvivors:\n${survivors.join('\n')}`)
if (failed) {
  console.error(`\nA module scored below ${GOAL} % or did not run.`)
  process.exit(1)
}
