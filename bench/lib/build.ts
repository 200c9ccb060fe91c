import { execFile } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { ROOT } from './paths.ts'

/**
 * Servers run as compiled JavaScript, as production runs `node dist/server.js`: tsx would add
 * its own transform artefacts (esbuild keepNames wraps every closure creation in `__name`) to
 * the hot path. The compile goes to a temporary directory, never to the shared dist/; that
 * directory links node_modules and drizzle/ so imports and migrations resolve as from dist/.
 * BENCH_RUNNER=tsx runs the TypeScript sources through tsx instead (no compile step).
 */
export const RUNNER: 'compiled' | 'tsx' = process.env.BENCH_RUNNER === 'tsx' ? 'tsx' : 'compiled'

let built: Promise<string> | undefined
let buildDir: string | undefined

/** Compiles src/ and bench/servers/ once per run; resolves to the output root. */
export async function compiledRoot (): Promise<string> {
  built ??= (async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bus-bench-build-'))
    buildDir = dir
    const out = join(dir, 'out')
    mkdirSync(out)
    symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir')
    symlinkSync(join(ROOT, 'drizzle'), join(out, 'drizzle'), 'dir')
    writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({
      extends: join(ROOT, 'tsconfig.json'),
      compilerOptions: { rootDir: ROOT, outDir: out, sourceMap: false, declaration: false, incremental: false },
      include: [join(ROOT, 'src'), join(ROOT, 'bench/servers'), join(ROOT, 'bench/*.d.ts')]
    }))
    await promisify(execFile)(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(dir, 'tsconfig.json'), '--noCheck'], { cwd: ROOT })
    return out
  })()
  return await built
}

/** The node arguments that run `script` (a path from the repository root, e.g. src/server.ts). */
export async function scriptArgs (script: string): Promise<string[]> {
  if (RUNNER === 'tsx') return ['--import=tsx', join(ROOT, script)]
  return [join(await compiledRoot(), script.replace(/\.ts$/, '.js'))]
}

export function removeBuild (): void {
  if (buildDir !== undefined) rmSync(buildDir, { recursive: true, force: true })
}
