use pottery_semaphore_host::{Options, Semaphore};
use pottery_semaphore_tests::{key, Flavor, Server};

#[tokio::test]
async fn smoke() {
    let server = Server::start(Flavor::Redis);
    let sem = Semaphore::open(Options::new(server.url(), key("smoke")).permits(2)).await.unwrap();
    assert!(sem.acquire(false, None).await.unwrap());
    assert_eq!(sem.value().await.unwrap(), 1);
    assert!(sem.acquire(false, None).await.unwrap());
    assert!(!sem.acquire(false, None).await.unwrap());
    sem.release(2).await.unwrap();
    assert_eq!(sem.value().await.unwrap(), 2);
}
