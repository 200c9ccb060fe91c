import { isIP } from 'node:net'

/**
 * A host name or address that can only mean this machine: `localhost` and `*.localhost`
 * (RFC 6761), 127.0.0.0/8, and ::1 (with or without brackets, in either spelling). The one rule
 * for the configuration (plain http, admin without a token) and for doctor.
 */
export function isLoopbackHost (host: string): boolean {
  const bare = host.replace(/^\[(.*)\]$/, '$1').toLowerCase()
  if (bare === 'localhost' || bare.endsWith('.localhost')) return true
  if (isIP(bare) === 4) return bare.startsWith('127.')
  if (isIP(bare) === 6) return bare === '::1' || bare === '0:0:0:0:0:0:0:1'
  return false
}
