import { closeSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs'
import { join } from 'node:path'

export interface DataDirLock { release: () => void }

export class DataDirInUseError extends Error {
  readonly dataDir: string
  readonly pid: number

  constructor (dataDir: string, pid: number) {
    super(`the embedded database in ${dataDir} is open in process ${pid}; only one process may open it (stop that process, or use DATABASE_URL for several)`)
    this.dataDir = dataDir
    this.pid = pid
    this.name = 'DataDirInUseError'
  }
}

/**
 * PGlite must be opened by one process only; two writers corrupt its files. A pid file guards
 * DATA_DIR: a live owner refuses us, a dead one (killed without cleanup) is taken over.
 */
export function acquireDataDirLock (dataDir: string): DataDirLock {
  const path = join(dataDir, 'bus-mcp.pid')
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx')
      writeSync(fd, String(process.pid))
      closeSync(fd)
      return {
        release: () => {
          if (readOwner(path) === process.pid) rmSync(path, { force: true })
        }
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      const owner = readOwner(path)
      if (owner !== undefined && owner !== process.pid && isAlive(owner)) throw new DataDirInUseError(dataDir, owner)
      rmSync(path, { force: true })
    }
  }
  throw new Error(`could not lock ${path}`)
}

function readOwner (path: string): number | undefined {
  try {
    const pid = Number(readFileSync(path, 'utf8').trim())
    return Number.isInteger(pid) && pid > 0 ? pid : undefined
  } catch {
    return undefined
  }
}

function isAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}
