service ReviewsService {
  action submit(subject : String, reviewer : String, rating : Integer);
}
