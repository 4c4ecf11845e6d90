// The emitting process: serves ReviewsService (without HTTP) and submits reviews, then exits at once.
const cds = require('@sap/cds')
const N = Number(process.argv[2] || 20)
const subjects = ['Wuthering Heights', 'Jane Eyre', 'The Raven', 'Eleonora', 'Catweazle']

;(async () => {
  cds.root = __dirname
  await cds.serve('ReviewsService').from(`${__dirname}/srv`)
  const reviews = await cds.connect.to('ReviewsService')
  for (let i = 0; i < N; i++) {
    const review = { subject: subjects[i % subjects.length], reviewer: `reader-${i}`, rating: 1 + (i % 5) }
    await reviews.submit(review) // the emit resolves once the line is on disk
    console.log(`emitted  #${String(i).padStart(2)} ${review.subject} by ${review.reviewer}: ${'*'.repeat(review.rating)}`)
  }
  process.exit(0) // a short-lived script: nothing is lost when it leaves right away
})().catch(e => {
  console.error(e)
  process.exit(1)
})
