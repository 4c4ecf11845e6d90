service ReviewsService {
  event reviewed : { subject : String; rating : Integer; }
  action review(subject : String, rating : Integer) returns String;
}
