/** Bounds on what one message may carry; the /mcp body limit is derived from them. */
export const MAX_BODY_BYTES = 64 * 1024
export const MAX_METADATA_BYTES = 16 * 1024
export const MAX_WAIT_SECONDS = 25
export const MAX_READ_LIMIT = 500
export const DEFAULT_READ_LIMIT = 100

export const CHANNEL_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/

/** Raised for input a model can correct; its message is shown to the model as a tool error. */
export class BusInputError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'BusInputError'
  }
}

/**
 * PostgreSQL text cannot hold NUL, and jsonb refuses lone surrogates: both must be caught here,
 * as input errors, instead of surfacing as database errors.
 */
export function assertStorableText (value: string, what: string): void {
  if (value.includes('\u0000')) throw new BusInputError(`${what} must not contain NUL (\\u0000) characters`)
  if (!value.isWellFormed()) throw new BusInputError(`${what} must be well-formed Unicode (it has a lone surrogate)`)
}

export function assertStorableJson (value: unknown, path = 'metadata', depth = 0): void {
  if (depth > 32) throw new BusInputError('metadata is nested too deeply (at most 32 levels)')
  if (typeof value === 'string') {
    assertStorableText(value, path)
  } else if (Array.isArray(value)) {
    value.forEach((item, i) => { assertStorableJson(item, `${path}[${i}]`, depth + 1) })
  } else if (value !== null && typeof value === 'object') {
    for (const [key, item] of Object.entries(value)) {
      assertStorableText(key, `${path} key`)
      assertStorableJson(item, `${path}.${key}`, depth + 1)
    }
  } else if (typeof value === 'number' && !Number.isFinite(value)) {
    throw new BusInputError(`${path} must be a finite number`)
  }
}
