/**
 * Runs src/cli.ts many times in one Node process, for test/helpers/cli.ts: starting a process
 * (Node, then the CLI's modules) for each command made the CLI tests the slowest file.
 *
 * Each run is a fresh evaluation of src/cli.ts (imported under a new URL, so its commander
 * program and options start empty; the modules it imports are shared, as they hold no state the
 * CLI changes), with exactly the argv and environment the command would have had as a process.
 * What it writes to stdout and stderr is captured, and its exit code is process.exitCode at the
 * end, which is how src/cli.ts reports it (it never calls process.exit). Runs go one at a time.
 *
 * Protocol (IPC): { id, args, env } in; { id, code, stdout, stderr } out. Started by the parent
 * with `node test/helpers/cli-host.ts` and cwd = the repository; ends when the parent goes.
 */
import { fileURLToPath } from 'node:url'

interface Request { id: number, args: string[], env: Record<string, string> }

const CLI = new URL('../../src/cli.ts', import.meta.url)
let runs = 0
let queue: Promise<void> = Promise.resolve()

type Write = typeof process.stdout.write

function capture (stream: NodeJS.WriteStream, into: string[]): () => void {
  const original = stream.write
  stream.write = ((chunk: string | Uint8Array, encoding?: BufferEncoding | ((err?: Error | null) => void), callback?: (err?: Error | null) => void): boolean => {
    into.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString(typeof encoding === 'string' ? encoding : 'utf8'))
    const done = typeof encoding === 'function' ? encoding : callback
    if (done !== undefined) process.nextTick(done)
    return true
  }) as Write
  return () => { stream.write = original }
}

async function run (request: Request): Promise<{ code: number, stdout: string, stderr: string }> {
  const stdout: string[] = []
  const stderr: string[] = []
  const savedEnv = { ...process.env }
  const savedArgv = process.argv
  for (const key of Object.keys(process.env)) Reflect.deleteProperty(process.env, key)
  Object.assign(process.env, request.env)
  process.argv = [process.execPath, fileURLToPath(CLI), ...request.args]
  process.exitCode = undefined
  const restoreOut = capture(process.stdout, stdout)
  const restoreErr = capture(process.stderr, stderr)
  let code: number
  try {
    await import(`${CLI.href}?run=${++runs}`)
    code = Number(process.exitCode ?? 0)
  } catch (err) {
    // src/cli.ts catches everything itself; a throw here is a bug there (a real process would
    // print the stack trace and exit 1).
    stderr.push(`${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
    code = 1
  } finally {
    restoreOut()
    restoreErr()
    process.exitCode = undefined
    process.argv = savedArgv
    for (const key of Object.keys(process.env)) Reflect.deleteProperty(process.env, key)
    Object.assign(process.env, savedEnv)
  }
  return { code, stdout: stdout.join(''), stderr: stderr.join('') }
}

process.on('message', (request: Request) => {
  queue = queue.then(async () => {
    const result = await run(request)
    process.send?.({ id: request.id, ...result })
  })
})
process.on('disconnect', () => { process.exit(0) })
process.send?.({ ready: true })
