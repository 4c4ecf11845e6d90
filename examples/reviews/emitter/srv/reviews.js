const cds = require('@sap/cds')

// Each submitted review is published on the `messaging` service, i.e. into the native file box.
module.exports = class ReviewsService extends cds.ApplicationService {
  async init() {
    const messaging = await cds.connect.to('messaging')
    this.on('submit', async req => {
      await messaging.emit('sap.capire.reviews.reviewed', req.data)
    })
    return super.init()
  }
}
