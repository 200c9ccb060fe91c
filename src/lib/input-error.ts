/**
 * Input the caller can fix (a bad name, an unknown principal, grant or client, a conflict),
 * raised by the stores the admin API and the CLI act through; the admin API answers it with its
 * status and message (src/admin/app.ts).
 */
export class InputError extends Error {
  readonly statusCode: 400 | 404 | 409

  constructor (message: string, statusCode: 400 | 404 | 409 = 400) {
    super(message)
    this.statusCode = statusCode
    this.name = 'InputError'
  }
}
