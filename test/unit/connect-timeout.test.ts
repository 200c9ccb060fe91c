import t from 'tap'
import { connectTimeoutOf, connectTimeoutProblem } from '../../src/db/connect-timeout.ts'
import { firstAnswerSeconds } from '../../src/db/migrate.ts'

t.test('connect_timeout is read from the query of DATABASE_URL, in whole seconds', async (t) => {
  t.equal(connectTimeoutOf('postgres://bus:pw@db:5432/bus'), undefined, 'absent')
  t.equal(connectTimeoutOf('postgres://bus:pw@db:5432/bus?connect_timeout=7'), 7)
  t.equal(connectTimeoutOf('postgresql://bus@h1:5432,h2:5433/bus?sslmode=require&connect_timeout=1'), 1, 'several hosts, other parameters')
  t.equal(connectTimeoutOf('postgres://bus:pa%3Fss@db/bus?connect_timeout=3600'), 3600, 'an encoded ? in the password is not the query')
  t.equal(connectTimeoutOf('postgres://bus@db/bus?application_name=x#connect_timeout=9'), undefined, 'not from the fragment')
  for (const value of ['0', '-1', '2.5', '1e3', ' 5', '3601', '99999', '', 'ten']) {
    t.equal(connectTimeoutOf(`postgres://db/bus?connect_timeout=${value}`), undefined, `unusable: ${JSON.stringify(value)}`)
    t.match(connectTimeoutProblem(`postgres://db/bus?connect_timeout=${value}`), /^connect_timeout must be a whole number of seconds from 1 to 3600$/)
  }
  t.equal(connectTimeoutProblem('postgres://db/bus?connect_timeout=5'), undefined)
  t.equal(connectTimeoutProblem('postgres://db/bus'), undefined)
})

t.test('the first answer may take connect_timeout, or 15 s without it', async (t) => {
  t.equal(firstAnswerSeconds('postgres://bus@db/bus'), 15)
  t.equal(firstAnswerSeconds('postgres://bus@db/bus?connect_timeout=2'), 2)
})
