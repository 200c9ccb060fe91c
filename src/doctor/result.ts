/**
 * What a check of `bus-mcp doctor` reports: `pass`; `fail` (counts against the exit code); `warn`
 * (works here, but not for claude.ai or not everywhere); `info` (optional behaviour absent). Only
 * `fail` has `ok: false`.
 */
export type CheckStatus = 'pass' | 'fail' | 'warn' | 'info'

export interface CheckResult {
  name: string
  status: CheckStatus
  ok: boolean
  detail: string
  fix: string | null
}

export const pass = (name: string, detail: string): CheckResult => ({ name, status: 'pass', ok: true, detail, fix: null })
export const fail = (name: string, detail: string, fix: string): CheckResult => ({ name, status: 'fail', ok: false, detail, fix })
export const warn = (name: string, detail: string, fix: string): CheckResult => ({ name, status: 'warn', ok: true, detail, fix })
export const info = (name: string, detail: string, fix: string | null): CheckResult => ({ name, status: 'info', ok: true, detail, fix })
