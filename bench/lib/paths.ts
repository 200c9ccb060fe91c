import { fileURLToPath } from 'node:url'

/** The repository root (servers run with it as their working directory). */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url))
